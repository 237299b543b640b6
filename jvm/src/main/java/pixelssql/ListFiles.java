package pixelssql;

import java.io.IOException;
import java.io.Serializable;
import java.io.UncheckedIOException;
import java.util.List;
import java.util.Locale;

import org.apache.hadoop.conf.Configuration;

import org.apache.spark.sql.SparkSession;
import org.apache.spark.sql.catalyst.InternalRow;
import org.apache.spark.sql.catalyst.expressions.Expression;
import org.apache.spark.sql.catalyst.expressions.Literal;
import org.apache.spark.sql.catalyst.parser.ParserInterface;
import org.apache.spark.sql.catalyst.expressions.NamedArgumentExpression;
import org.apache.spark.sql.catalyst.plans.logical.LogicalPlan;
import org.apache.spark.sql.execution.datasources.v2.DataSourceV2Relation;
import org.apache.spark.sql.execution.python.UserDefinedPythonTableFunction;
import org.apache.spark.sql.types.DataTypes;
import org.apache.spark.sql.types.StructType;

import scala.Option;
import scala.collection.immutable.Seq;
import scala.jdk.javaapi.CollectionConverters;
import scala.runtime.AbstractFunction0;
import scala.runtime.AbstractFunction1;

/**
 * Builds the plan of one {@code list_files(path [, glob => '*'] [, recursive => true])} call: a
 * {@link ListingTable} with the columns {@code path, modificationTime, length, reason, message},
 * walked when the query runs (the path and the glob are checked when it is analyzed).
 */
public final class ListFiles extends AbstractFunction1<Seq<Expression>, LogicalPlan>
    implements Serializable {

  private static final long serialVersionUID = 1L;

  static final String FUNCTION_NAME = "list_files";

  static final String USAGE =
      "list_files(path [, glob => '*'] [, recursive => true]) - Lists every file under `path`"
          + " (taken literally, never as a glob), one row each: path STRING (as the binaryFile"
          + " source gives it), modificationTime TIMESTAMP, length BIGINT, reason STRING,"
          + " message STRING. Zero-byte files and names starting with `_` are listed, names"
          + " starting with `.` are not. A folder that cannot be listed is one row with reason"
          + " 'unreadable', a dangling symlink one row with reason 'not_found', a named pipe,"
          + " socket or device one row with reason 'not_regular'. `glob` filters file names;"
          + " `recursive => false` lists only the files of the folder itself.";

  static final String EXAMPLES =
      "\n    Examples:\n"
          + "      > SELECT path, length FROM list_files('/data/dicom', glob => '*.dcm')"
          + " WHERE reason IS NULL;\n";

  static final StructType SCHEMA =
      new StructType()
          .add("path", DataTypes.StringType, false)
          .add("modificationTime", DataTypes.TimestampType, true)
          .add("length", DataTypes.LongType, true)
          .add("reason", DataTypes.StringType, true)
          .add("message", DataTypes.StringType, true);

  @Override
  public LogicalPlan apply(Seq<Expression> arguments) {
    String path = null;
    String glob = "*";
    boolean recursive = true;
    for (Expression argument : CollectionConverters.asJava(arguments)) {
      if (argument instanceof NamedArgumentExpression) {
        NamedArgumentExpression named = (NamedArgumentExpression) argument;
        String key = named.key().toLowerCase(Locale.ROOT);
        Object value = literal(named.key(), named.value());
        if (key.equals("path")) {
          path = value.toString();
        } else if (key.equals("glob")) {
          glob = value.toString();
        } else if (key.equals("recursive")) {
          recursive = bool(value);
        } else {
          throw new IllegalArgumentException(
              FUNCTION_NAME
                  + " has no argument '"
                  + named.key()
                  + "'; it takes path, glob => '*' and recursive => true");
        }
      } else if (path == null) {
        path = literal("path", argument).toString();
      } else {
        throw new IllegalArgumentException(
            FUNCTION_NAME
                + " takes one positional argument (the path); pass glob and recursive as named"
                + " arguments, e.g. list_files('/data', glob => '*.dcm')");
      }
    }
    if (path == null || path.isEmpty()) {
      throw new IllegalArgumentException(
          FUNCTION_NAME + " needs a path: list_files('/data/dicom')");
    }

    ClientGuard.checkListing(path);
    org.apache.spark.sql.classic.SparkSession session =
        (org.apache.spark.sql.classic.SparkSession) SparkSession.active();
    Configuration hadoopConf = session.sessionState().newHadoopConf();
    if (!FileListing.hadoopLists(path, hadoopConf)) {
      return objectListing(session, path, glob, recursive);
    }
    String scheme = FileListing.scheme(path);
    FileListing.matcher(glob); // an invalid glob fails here, when the query is analyzed
    ListingTable table;
    if (scheme == null || scheme.equalsIgnoreCase("file")) {
      java.nio.file.Path root = FileListing.localPath(path, scheme);
      boolean file = !FileListing.checkRoot(path, root).isDirectory();
      try {
        table =
            ListingTable.local(
                FUNCTION_NAME,
                root,
                file,
                glob,
                recursive,
                LocalWalk.Naming.LIST_FILES,
                Long.MAX_VALUE,
                session.sparkContext().defaultParallelism(),
                NativeFolders.wanted(session));
      } catch (IOException e) {
        throw new UncheckedIOException(FUNCTION_NAME + ": cannot list " + path + ": " + e, e);
      }
    } else {
      checkHadoopRoot(path, hadoopConf);
      table = ListingTable.hadoop(path, glob, recursive, hadoopConf);
    }
    return DataSourceV2Relation.create(table, Option.empty(), Option.empty());
  }

  /** A path of a Hadoop file system that does not exist fails the query when it is analyzed. */
  private static void checkHadoopRoot(String path, Configuration conf) {
    org.apache.hadoop.fs.Path root = new org.apache.hadoop.fs.Path(path);
    try {
      root.getFileSystem(conf).getFileStatus(root);
    } catch (java.io.FileNotFoundException e) {
      throw new IllegalArgumentException(FUNCTION_NAME + ": path does not exist: " + path, e);
    } catch (IOException e) {
      throw new UncheckedIOException(FUNCTION_NAME + ": cannot list " + path + ": " + e, e);
    }
  }

  /** Name of the Python table function (pixels_sql/functions/listing.py) listing object stores. */
  static final String OBJECT_LISTING = "pixels_list_objects";

  /**
   * The plan of a listing of object storage (s3://, gs://, abfs://...) that no Hadoop file system
   * of this application can read (the pyspark wheel has no hadoop-aws): the Python table function
   * that lists it through fsspec, page by page, when the query runs.
   */
  static LogicalPlan objectListing(
      org.apache.spark.sql.classic.SparkSession session,
      String path,
      String glob,
      boolean recursive) {
    UserDefinedPythonTableFunction lister = PythonFunctions.tableFunction(OBJECT_LISTING);
    if (lister == null) {
      throw new IllegalArgumentException(
          FUNCTION_NAME
              + ": no file system of this application reads "
              + path
              + ": start the session with pixels_sql.session() or pixels-sql (which list object"
              + " storage through fsspec), or put the Hadoop file system's jars on the class path");
    }
    List<Expression> arguments =
        List.of(
            Literal.create(path, DataTypes.StringType),
            Literal.create(glob, DataTypes.StringType),
            Literal.create(recursive, DataTypes.BooleanType));
    return lister.builder(
        CollectionConverters.asScala(arguments).toSeq(), new ParserOf(session));
  }

  /** The session's SQL parser, as the table function's builder asks for it. */
  static final class ParserOf extends AbstractFunction0<ParserInterface> implements Serializable {
    private static final long serialVersionUID = 1L;
    private final transient org.apache.spark.sql.classic.SparkSession session;

    ParserOf(org.apache.spark.sql.classic.SparkSession session) {
      this.session = session;
    }

    @Override
    public ParserInterface apply() {
      return session.sessionState().sqlParser();
    }
  }

  /** Evaluates a constant argument. */
  private static Object literal(String name, Expression expression) {
    if (!expression.foldable()) {
      throw new IllegalArgumentException(
          FUNCTION_NAME + " argument '" + name + "' must be a constant, got: " + expression.sql());
    }
    Object value = expression.eval(null);
    if (value == null) {
      throw new IllegalArgumentException(
          FUNCTION_NAME + " argument '" + name + "' must not be NULL");
    }
    return value;
  }

  private static boolean bool(Object value) {
    if (value instanceof Boolean) {
      return (Boolean) value;
    }
    String text = value.toString().trim().toLowerCase(Locale.ROOT);
    if (text.equals("true") || text.equals("false")) {
      return text.equals("true");
    }
    throw new IllegalArgumentException(
        FUNCTION_NAME + " argument 'recursive' must be true or false, got: " + value);
  }
}
